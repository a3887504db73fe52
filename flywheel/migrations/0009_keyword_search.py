"""Keyword search's term statistics: per index version and lexeme, the number of chunks that
hold it, kept by statement-level triggers on flywheel_chunk (one aggregate per INSERT, COPY,
UPDATE or DELETE statement, however many rows it touches), and filled for existing chunks.
And the HNSW index rebuilt with ef_construction 128, for recall 0.95 at a smaller ef_search."""

import pgvector.django
from django.db import migrations, models

# Lexemes of a statement's rows, counted per index version. Rows are upserted in key order,
# so two statements that touch the same lexemes lock them in the same order.
TERMS_OF = """
    SELECT index_version_id, lexeme, count(*) AS chunks
    FROM {rows}, unnest(tsvector_to_array(search_vector)) AS lexeme
    GROUP BY index_version_id, lexeme ORDER BY index_version_id, lexeme
"""
TERMS_ADD = f"""
    INSERT INTO flywheel_chunkterm AS term (index_version_id, lexeme, chunks)
    {TERMS_OF.format(rows="new_rows")}
    ON CONFLICT (index_version_id, lexeme) DO UPDATE SET chunks = term.chunks + EXCLUDED.chunks;
"""
# A lexeme whose last chunk goes loses its row; the others are counted down.
TERMS_REMOVE = f"""
    WITH gone AS ({TERMS_OF.format(rows="old_rows")}),
    emptied AS (
        DELETE FROM flywheel_chunkterm AS term USING gone
        WHERE term.index_version_id = gone.index_version_id AND term.lexeme = gone.lexeme
            AND term.chunks <= gone.chunks
    )
    UPDATE flywheel_chunkterm AS term SET chunks = term.chunks - gone.chunks FROM gone
    WHERE term.index_version_id = gone.index_version_id AND term.lexeme = gone.lexeme
        AND term.chunks > gone.chunks;
"""


def _function(name: str, body: str) -> str:
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {body} RETURN NULL; END $$;"
    )


TRIGGERS = f"""
{_function("flywheel_chunk_terms_add", TERMS_ADD)}
{_function("flywheel_chunk_terms_remove", TERMS_REMOVE)}
{_function("flywheel_chunk_terms_replace", TERMS_REMOVE + TERMS_ADD)}
CREATE TRIGGER chunk_terms_insert AFTER INSERT ON flywheel_chunk
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION flywheel_chunk_terms_add();
CREATE TRIGGER chunk_terms_delete AFTER DELETE ON flywheel_chunk
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION flywheel_chunk_terms_remove();
CREATE TRIGGER chunk_terms_update AFTER UPDATE ON flywheel_chunk
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION flywheel_chunk_terms_replace();
INSERT INTO flywheel_chunkterm (index_version_id, lexeme, chunks)
{TERMS_OF.format(rows="flywheel_chunk")};
"""
TRIGGERS_DROP = """
DROP TRIGGER chunk_terms_insert ON flywheel_chunk;
DROP TRIGGER chunk_terms_delete ON flywheel_chunk;
DROP TRIGGER chunk_terms_update ON flywheel_chunk;
DROP FUNCTION flywheel_chunk_terms_add();
DROP FUNCTION flywheel_chunk_terms_remove();
DROP FUNCTION flywheel_chunk_terms_replace();
"""


class Migration(migrations.Migration):
    dependencies = [("flywheel", "0008_interaction_write_path")]

    operations: list = [
        migrations.CreateModel(
            name="ChunkTerm",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("index_version_id", models.BigIntegerField()),
                ("lexeme", models.TextField()),
                ("chunks", models.IntegerField()),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("index_version_id", "lexeme"), name="chunk_term_version_lexeme"
                    )
                ],
            },
        ),
        migrations.RunSQL(TRIGGERS, TRIGGERS_DROP),
        migrations.RemoveIndex(model_name="chunk", name="chunk_embedding_hnsw"),
        migrations.AddIndex(
            model_name="chunk",
            index=pgvector.django.HnswIndex(
                ef_construction=128,
                fields=["embedding"],
                m=16,
                name="chunk_embedding_hnsw",
                opclasses=["vector_cosine_ops"],
            ),
        ),
    ]
