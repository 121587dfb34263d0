"""Re-encrypt every encrypted column with the newest key of FIELD_ENCRYPTION_KEYS, and the
token answers kept encrypted in Redis (connections.tokens).

Safe to run while the portal runs and safe to run again: values already under the newest key are
skipped, and each update only applies if the row (or the Redis key) still holds the ciphertext
that was read, so a value written meanwhile (already under the newest key) is never overwritten
with an older one.
"""

import redis
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from connections import kept_answers
from core import encryption


class Command(BaseCommand):
    help = "Re-encrypt every encrypted column with the newest key in FIELD_ENCRYPTION_KEYS."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, batch_size: int, **options):
        total_rotated = 0
        for model, field in encryption.encrypted_fields():
            total_rotated += self.rotate_column(model, field, batch_size)
        try:
            kept, unreadable = kept_answers.reencrypt_all()
        except redis.RedisError as exc:
            raise CommandError(
                f"{total_rotated} value(s) re-encrypted in the database, but Redis is unreachable "
                f"({exc}): the token answers kept there are not re-encrypted. Keep the old key "
                "until this command succeeds."
            ) from exc
        self.stdout.write(f"Redis: {kept} kept token answer(s) re-encrypted")
        if unreadable:
            self.stdout.write(
                f"Redis: {unreadable} kept token answer(s) no key opens, left for their "
                "connection's next refresh to drop"
            )
        total_rotated += kept
        self.stdout.write(self.style.SUCCESS(f"Done: {total_rotated} value(s) re-encrypted."))

    def rotate_column(self, model, field, batch_size: int) -> int:
        qn = connection.ops.quote_name
        table, column, pk = model._meta.db_table, field.column, model._meta.pk.column
        where = f"{table}.{column}"
        total = model._base_manager.count()
        select = (
            f"SELECT {qn(pk)}, {qn(column)} FROM {qn(table)} "  # noqa: S608 (names are quoted)
            f"WHERE {qn(pk)} > %s AND {qn(column)} IS NOT NULL ORDER BY {qn(pk)} LIMIT %s"
        )
        update = (
            f"UPDATE {qn(table)} SET {qn(column)} = %s "  # noqa: S608
            f"WHERE {qn(pk)} = %s AND {qn(column)} = %s"
        )
        last_pk, seen, rotated = 0, 0, 0
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(select, [last_pk, batch_size])
                rows = cursor.fetchall()
                for row_pk, token in rows:
                    if encryption.needs_rotation(token):
                        fresh = encryption.rotate(token, where=f"{where} (id {row_pk})")
                        cursor.execute(update, [fresh, row_pk, token])
                        rotated += cursor.rowcount
            if not rows:
                break
            seen += len(rows)
            last_pk = rows[-1][0]
            self.stdout.write(f"{where}: {seen}/{total} rows checked, {rotated} re-encrypted")
        if seen == 0:
            self.stdout.write(f"{where}: no values")
        return rotated
