"""The bottom layer: what every app needs and no app owns. Nothing here imports an app."""
