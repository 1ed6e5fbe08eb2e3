"""The original design, re-implemented faithfully as the baseline embedlib is measured against.

From ``../shared/ORIGINAL_NOTE.md``: batches fetched in id order by the main
connection, run on a thread pool with one shared model, one database
connection per worker, ``encode`` called once per fetched batch, one INSERT
per row with the vector sent as text, a progress counter under a lock, and
``frequency`` (a per-row count query) only when running single-threaded.
Nothing here is used by embedlib itself.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np
from psycopg2 import sql

from embedlib.db.session import connect


def create_target(dsn: str, table: str, dimension: int) -> str:
    target = f"{table}_original"
    conn = connect(dsn, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(target)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, embedding vector({}), char_length int, "
                "token_count int, norm real, frequency int)"
            ).format(sql.Identifier(target), sql.Literal(dimension))
        )
    conn.close()
    return target


def ingest(dsn: str, table: str, model: Any, batch_size: int, workers: int) -> int:
    """Embed every row of ``table`` the original way; returns rows written."""
    target = create_target(dsn, table, model.get_embedding_dimension())
    local = threading.local()
    connections = []
    progress_lock = threading.Lock()
    progress = {"rows": 0}

    def process_batch_worker(rows: list[tuple[int, str]]) -> int:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect(dsn)
            connections.append(conn)
        texts = [text for _, text in rows]
        embeddings = model.encode(texts, batch_size=len(texts))
        with conn.cursor() as cur:
            for (row_id, text), vector in zip(rows, embeddings, strict=True):
                token_count = len(model.tokenizer(text)["input_ids"])
                frequency = None
                if workers == 1:  # the original switched frequency off when threaded
                    cur.execute(
                        sql.SQL("SELECT count(*) FROM {} WHERE text = %s").format(sql.Identifier(table)), (text,)
                    )
                    frequency = cur.fetchone()[0]
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (id, embedding, char_length, token_count, norm, frequency) "
                        "VALUES (%s, %s::vector, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                        "embedding = EXCLUDED.embedding, char_length = EXCLUDED.char_length, "
                        "token_count = EXCLUDED.token_count, norm = EXCLUDED.norm, frequency = EXCLUDED.frequency"
                    ).format(sql.Identifier(target)),
                    (row_id, str(vector.tolist()), len(text), token_count, float(np.linalg.norm(vector)), frequency),
                )
        conn.commit()
        with progress_lock:
            progress["rows"] += len(rows)
        return len(rows)

    main = connect(dsn)
    try:
        with main.cursor() as cur, ThreadPoolExecutor(max_workers=workers) as pool:
            cur.execute(sql.SQL("SELECT id, text FROM {} ORDER BY id").format(sql.Identifier(table)))
            futures = []
            while rows := cur.fetchmany(batch_size):
                futures.append(pool.submit(process_batch_worker, rows))
            written = sum(future.result() for future in as_completed(futures))
    finally:
        main.close()
        for conn in connections:
            conn.close()
    return written
