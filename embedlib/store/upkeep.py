"""What keeps a target in order beside the writes: blank rows recorded as skipped, errors that
a later run resolved cleared, each text's frequency refreshed after a run, and the vectors of
rows deleted from the source removed."""

from __future__ import annotations

import io
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
from psycopg2 import sql

from embedlib.db import copybin
from embedlib.db.queue import Cursor
from embedlib.db.relations import SourceTable, TargetTable
from embedlib.db.session import Connection, one_statement, transaction

_DUPLICATES = sql.Identifier("embedlib_duplicates")


# The errors table's record of a blank row: nothing was tried (attempts 0), and until its text
# changes (text_hash) the row is not pending (see source.reader._chunk_rows).
SKIPPED_BLANK = "skipped: the text is NULL, empty or whitespace"


def skip_blank(
    conn: Connection,
    target: TargetTable,
    ids: Sequence[str],
    text_hashes: Sequence[str],
    settle: Callable[[Cursor], list[str]] | None = None,
) -> None:
    """Note rows whose text is blank as skipped, and remove the vectors they had (that text is gone).
    ``settle``: for rows from the change queue, takes their entries off it in the same transaction
    and says which rows are still as read (``db.queue.ChangeQueue.settle``): only those. Commits."""
    if not ids:
        return
    id_type = sql.SQL(target.id_type)
    delete = sql.SQL("DELETE FROM {target} WHERE id = ANY (CAST(%s AS {id_type}[]))").format(
        target=target.ident, id_type=id_type
    )
    record = sql.SQL(
        """
        INSERT INTO {errors} AS e (id, text_hash, error, attempts)
        SELECT CAST(f.id AS {id_type}), f.text_hash, %s, 0 FROM unnest(%s::text[], %s::text[]) AS f(id, text_hash)
        ON CONFLICT (id) DO UPDATE SET text_hash = EXCLUDED.text_hash, error = EXCLUDED.error, attempts = 0,
            first_failed_at = now(), failed_at = now()
        """
    ).format(errors=target.errors.ident, id_type=id_type)
    with transaction(conn), conn.cursor() as cur:
        if settle is not None:
            still = set(settle(cur))
            kept = [position for position, row_id in enumerate(ids) if row_id in still]
            ids, text_hashes = [ids[p] for p in kept], [text_hashes[p] for p in kept]
        cur.execute(delete, (list(ids),))
        cur.execute(record, (SKIPPED_BLANK, list(ids), list(text_hashes)))


def remove_gone(conn: Connection, target: TargetTable, holder: int, ids: Sequence[str], seqs: Sequence[int]) -> int:
    """Remove the vectors and error records of rows deleted from a tracked source, with their change
    queue entries, in one transaction (those of rows inserted again since are left); vectors
    removed. Commits."""
    delete = "DELETE FROM {} WHERE id = ANY (CAST(%s AS {}[]))"
    with transaction(conn), conn.cursor() as cur:
        gone = target.queue.settle(cur, holder, ids, seqs)
        cur.execute(sql.SQL(delete).format(target.errors.ident, sql.SQL(target.id_type)), (gone,))
        cur.execute(sql.SQL(delete).format(target.ident, sql.SQL(target.id_type)), (gone,))
        return int(cur.rowcount)


def refresh_touched(conn: Connection, target: TargetTable, text_hashes: Collection[str]) -> int:
    """Set the frequency of the texts ``text_hashes`` to the rows the target holds of each; rows
    changed. A tracked table's runs keep frequency so, for the texts they touched (new ones and
    those their rows held before), through the text-hash index: no scan of the source."""
    if not text_hashes:
        return 0
    statement = sql.SQL(
        "UPDATE {target} t SET frequency = c.n FROM (SELECT x.text_hash, count(*)::int4 AS n FROM {target} x "
        "WHERE x.text_hash = ANY (%s::text[]) AND {first} GROUP BY x.text_hash) c "
        "WHERE t.text_hash = c.text_hash AND t.frequency IS DISTINCT FROM c.n"
    ).format(target=target.ident, first=target.first_chunk("x"))
    with transaction(conn), conn.cursor() as cur:
        cur.execute(statement, (sorted(text_hashes),))
        return int(cur.rowcount)


def clear_resolved_errors(conn: Connection, target: TargetTable) -> int:
    """Drop error records of rows embedded since they failed (a retry that worked, or a new text).

    Done at the start and end of a run rather than with every batch: the
    errors table is small, and a record outliving its row by a run does no harm.
    """
    statement = sql.SQL(
        "DELETE FROM {errors} e USING {target} t WHERE t.id = e.id AND t.embedded_at > e.failed_at"
    ).format(errors=target.errors.ident, target=target.ident)
    with conn.cursor() as cur:
        cur.execute(statement)
        return int(cur.rowcount)


def refresh_frequency(conn: Connection, target: TargetTable, duplicates: Mapping[str, int]) -> int:
    """Correct ``frequency`` where the source changed since it was written; returns rows changed.

    Writes store each row's frequency (from ``source.counts.duplicate_counts``, taken
    at the start of the run); what can be stale are rows this run did not
    write whose text gained or lost duplicates. Those are rows holding a
    duplicated text, found through the text-hash index, and rows whose
    frequency is not 1, found through a partial index: never a scan of the
    whole target.
    """
    with transaction(conn), conn.cursor() as cur:  # one transaction: the temporary table lives until its commit
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} (text_hash text PRIMARY KEY, n int4) ON COMMIT DROP").format(_DUPLICATES)
        )
        data = copybin.payload(
            [
                copybin.fixed_text(list(duplicates), 32),
                copybin.int4(np.fromiter(duplicates.values(), dtype=np.int64, count=len(duplicates))),
            ]
        )
        cur.copy_expert(sql.SQL("COPY pg_temp.{} FROM STDIN (FORMAT binary)").format(_DUPLICATES), io.BytesIO(data))
        cur.execute(sql.SQL("ANALYZE pg_temp.{}").format(_DUPLICATES))
        cur.execute(
            sql.SQL(
                "UPDATE {target} t SET frequency = d.n FROM pg_temp.{duplicates} d "
                "WHERE t.text_hash = d.text_hash AND t.frequency IS DISTINCT FROM d.n"
            ).format(target=target.ident, duplicates=_DUPLICATES)
        )
        changed = cur.rowcount
        cur.execute(
            sql.SQL(
                "UPDATE {target} t SET frequency = 1 WHERE t.frequency IS DISTINCT FROM 1 "
                "AND NOT EXISTS (SELECT FROM pg_temp.{duplicates} d WHERE d.text_hash = t.text_hash)"
            ).format(target=target.ident, duplicates=_DUPLICATES)
        )
        changed += cur.rowcount
    return changed


def remove_orphans(
    conn: Connection, source: SourceTable, target: TargetTable, after: str | None, last: str | None
) -> int:
    """Remove the vectors (and error records) of rows deleted from the source, among the ids in
    ``(after, last]`` (None: no bound on that side). Vectors removed. Commits.

    A run calls it for every span it reads, the gaps between them and the tail
    past the last one included, so a full run leaves no vector without its row.
    """
    gone = deleted_rows(source, bounded_after=after is not None, bounded_last=last is not None)
    # One statement (one round trip: a run makes this call once a window).
    statement = sql.SQL(
        "WITH errors AS (DELETE FROM {errors} x WHERE {gone}), vectors AS (DELETE FROM {target} x WHERE {gone} "
        "RETURNING 1) SELECT count(*) FROM vectors"
    ).format(errors=target.errors.ident, target=target.ident, gone=gone)
    with one_statement(conn), conn.cursor() as cur:
        cur.execute(statement, {"after": after, "last": last})
        (removed,) = cur.fetchone() or (0,)
    return int(removed)


def deleted_rows(source: SourceTable, *, bounded_after: bool = False, bounded_last: bool = False) -> sql.Composable:
    """The condition on rows ``x`` of a target (or its errors table) whose id the source no longer
    holds; with bounds, among ids ``> %(after)s`` and ``<= %(last)s`` only."""
    id_column, id_type = sql.Identifier(source.id_column), sql.SQL(source.id_type)  # format_type: quoted already

    def within(column: sql.Composable) -> sql.Composable:
        bounds: list[sql.Composable] = [sql.SQL("TRUE")]
        if bounded_after:
            bounds.append(sql.SQL("{} > CAST(%(after)s AS {})").format(column, id_type))
        if bounded_last:
            bounds.append(sql.SQL("{} <= CAST(%(last)s AS {})").format(column, id_type))
        return sql.SQL(" AND ").join(bounds)

    # The source's side bounded too: the planner then reads both ranges once, never the whole source.
    return sql.SQL("{x_within} AND NOT EXISTS (SELECT FROM {source} s WHERE s.{id} = x.id AND {s_within})").format(
        x_within=within(sql.SQL("x.id")),
        source=source.ident,
        id=id_column,
        s_within=within(sql.SQL("s.{}").format(id_column)),
    )
