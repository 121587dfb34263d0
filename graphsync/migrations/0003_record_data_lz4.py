from django.db import migrations


def lz4_for_documents(apps, schema_editor):
    """PostgreSQL compresses documents over ~2 kB with pglz by default; a page of messages is
    full of them, and lz4 compresses several times faster for about the same size. Skipped on
    other databases, and on a PostgreSQL built without lz4."""
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
            "AND 'lz4' = ANY(enumvals)"
        )
        if cursor.fetchone():
            cursor.execute("ALTER TABLE graphsync_record ALTER COLUMN data SET COMPRESSION lz4")


class Migration(migrations.Migration):
    dependencies = [("graphsync", "0002_lean_record_keys")]

    operations = [migrations.RunPython(lz4_for_documents, migrations.RunPython.noop)]
