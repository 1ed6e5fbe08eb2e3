"""The SQL that change capture installs (see ``tracking``): the queue, and the trigger function.

The function runs as its owner (SECURITY DEFINER: whoever writes to the
source needs no rights on the queue) with ``search_path`` fixed to
``pg_catalog``, so every name in it is schema-qualified and ids are compared
as text (an id type whose ``=`` lives in another schema still works).
"""

from __future__ import annotations

# The triggers, one per event: statement-level, reading the statement's transition table, so
# a statement changing a million rows makes one INSERT into the queue.
EVENTS = {
    "insert": "AFTER INSERT ON {source} REFERENCING NEW TABLE AS embedlib_new",
    "update": "AFTER UPDATE ON {source} REFERENCING OLD TABLE AS embedlib_old NEW TABLE AS embedlib_new",
    "delete": "AFTER DELETE ON {source} REFERENCING OLD TABLE AS embedlib_old",
    "truncate": "AFTER TRUNCATE ON {source}",
}

QUEUE = """
    CREATE TABLE IF NOT EXISTS {queue} (
        id {id_type} PRIMARY KEY,
        seq bigserial NOT NULL,
        holder int4,
        queued_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )
"""

RESYNC = (
    "INSERT INTO {meta} (key, value) VALUES ('resync', clock_timestamp()::text) "
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
)

_REQUEUE = "ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, queued_at = EXCLUDED.queued_at"

# An update queues rows whose text changed ({old_text} and {new_text}: the text as
# relations.SourceTable.text_sql builds it, of each version of the row) and, where the id
# changed, the old id (gone) and the new one. DISTINCT: a deferrable unique id may hold one id
# twice within a statement.
_CHANGES = {
    "INSERT": "SELECT DISTINCT n.{id} FROM embedlib_new n WHERE n.{id} IS NOT NULL",
    "UPDATE": (
        "SELECT n.{id} FROM embedlib_new n "
        "LEFT JOIN embedlib_old o ON CAST(o.{id} AS text) = CAST(n.{id} AS text) "
        "WHERE n.{id} IS NOT NULL "
        "AND (o.{id} IS NULL OR {old_text} IS DISTINCT FROM {new_text}) "
        "UNION SELECT o.{id} FROM embedlib_old o "
        "LEFT JOIN embedlib_new n ON CAST(n.{id} AS text) = CAST(o.{id} AS text) "
        "WHERE o.{id} IS NOT NULL AND n.{id} IS NULL"
    ),
    "DELETE": "SELECT DISTINCT o.{id} FROM embedlib_old o WHERE o.{id} IS NOT NULL",
}


def _queue_changes(operation: str) -> str:
    statement = f"INSERT INTO {{queue}} (id) {_CHANGES[operation]} {_REQUEUE};"
    return statement + "\n            GET DIAGNOSTICS queued = ROW_COUNT;"


# The function never fails the statement that fired it, but for the two errors an application
# retries anyway (a serialization failure, a deadlock): if queueing fails (a column renamed
# under it, say) it asks for a full pass and warns. Each statement pays one subtransaction.
BODY = f"""
DECLARE
    queued bigint := 0;
BEGIN
    BEGIN
        IF TG_OP = 'INSERT' THEN
            {_queue_changes("INSERT")}
        ELSIF TG_OP = 'UPDATE' THEN
            {_queue_changes("UPDATE")}
        ELSIF TG_OP = 'DELETE' THEN
            {_queue_changes("DELETE")}
        ELSE
            DELETE FROM {{queue}};
            {RESYNC};
            queued := 1;
        END IF;
        IF queued > 0 THEN
            PERFORM pg_catalog.pg_notify({{channel}}, '');
        END IF;
    EXCEPTION
        WHEN serialization_failure OR deadlock_detected THEN
            RAISE;
        WHEN OTHERS THEN
            BEGIN
                {RESYNC};
            EXCEPTION WHEN OTHERS THEN
                NULL;  -- the warning below still says so
            END;
            RAISE WARNING 'embedlib could not queue the changes to %: % (the next run reads the whole table)',
                TG_TABLE_NAME, SQLERRM;
    END;
    RETURN NULL;
END
"""
