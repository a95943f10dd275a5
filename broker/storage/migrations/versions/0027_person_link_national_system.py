"""A national link names its system: one number of each per person

Revision ID: 0027
Revises: 0026

A sender that reuses one hospital identifier (a FHIR Patient.id, an MRN) for another
patient made the two one person: the index found the first patient by the reused
identifier and linked the second one's resident ID to them, so a check for either saw
the other's results. Ingest now refuses a link or merge that would give a person a second
number of one national system (broker.domain.linking.conflict); for that it must know
each national link's system, which the pseudonym hides, so the link row carries it, and a
partial unique index holds the rule against two workers linking at the same moment.

Back-fill: with the shipped identifier registry the only national system trusted for
linking is the resident ID (the permits that carry a 公民身份号码 link as it; untrusted
national systems are linked hospital-scoped), so every national link made so far is a
resident ID. People already holding several (made one by the fault above) keep them
unlabelled (NULL: the rule cannot weigh them) and the migration says how many: they need
`mrb patient review`/`unlink` by a platform admin.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mrb_wire import resident_id

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RESIDENT_ID_SYSTEM = resident_id.SYSTEM  # the wire contract's: it never changes

logger = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    with op.batch_alter_table("person_link") as batch:
        batch.add_column(sa.Column("national_system", sa.String(200), nullable=True))
    single = (
        "SELECT person_id FROM person_link WHERE scope = 'national' "
        "GROUP BY person_id HAVING COUNT(*) = 1"
    )
    op.execute(
        sa.text(
            "UPDATE person_link SET national_system = :system "
            f"WHERE scope = 'national' AND person_id IN ({single})"
        ).bindparams(system=RESIDENT_ID_SYSTEM)
    )
    several = op.get_bind().execute(
        sa.text(
            "SELECT COUNT(*) FROM (SELECT person_id FROM person_link WHERE scope = 'national' "
            "GROUP BY person_id HAVING COUNT(*) > 1) AS s"
        )
    ).scalar_one()
    if several:
        logger.warning(
            "%d people hold more than one national identifier (linked before the rule "
            "that a person holds one number of each national system): review them",
            several,
        )
    op.create_index(
        "uq_person_link_national",
        "person_link",
        ["person_id", "national_system"],
        unique=True,
        postgresql_where=sa.text("national_system IS NOT NULL"),
        sqlite_where=sa.text("national_system IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_person_link_national", table_name="person_link")
    with op.batch_alter_table("person_link") as batch:
        batch.drop_column("national_system")
