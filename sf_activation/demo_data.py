"""A realistic CRM-shaped DuckDB warehouse for the demo, the tests and the benchmarks.

Generated in SQL inside DuckDB (no large files in the repo). A handful of rows are made to
be rejected, each for a reason the demo explains:

- contacts whose email is not an address (Salesforce: INVALID_EMAIL_ADDRESS);
- an opportunity without a close date (Salesforce: REQUIRED_FIELD_MISSING);
- a contact whose primary key repeats (DUPLICATE_PRIMARY_KEY, never sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

INDUSTRIES = [
    "Agriculture",
    "Banking",
    "Biotechnology",
    "Chemicals",
    "Communications",
    "Construction",
    "Consulting",
    "Education",
    "Electronics",
    "Energy",
    "Engineering",
    "Finance",
    "Healthcare",
    "Insurance",
    "Manufacturing",
    "Media",
    "Retail",
    "Technology",
    "Transportation",
    "Utilities",
]
STAGES = ["Prospecting", "Qualification", "Needs Analysis", "Proposal/Price Quote", "Closed Won"]
TITLES = ["CEO", "CFO", "VP Sales", "Head of Data", "Analyst", "Engineer", "Buyer", None]


@dataclass(frozen=True)
class DemoSize:
    accounts: int = 20_000
    contacts_per_account: int = 2
    opportunities_per_account: int = 1
    bad_emails: int = 3


def _sql_list(values: list[str | None]) -> str:
    return (
        "["
        + ", ".join("NULL" if v is None else "'" + v.replace("'", "''") + "'" for v in values)
        + "]"
    )


def build_demo_warehouse(path: Path, size: DemoSize = DemoSize(), seed: int = 7) -> dict[str, int]:
    """(Re)create the demo tables in the DuckDB file at `path`; returns row counts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute(f"SELECT setseed({(seed % 1000) / 1000.0})")
        industries = _sql_list(INDUSTRIES)
        stages = _sql_list(STAGES)
        titles = _sql_list(TITLES)
        n = size.accounts
        con.execute(
            f"""
            CREATE OR REPLACE TABLE crm_accounts AS
            SELECT
                'ACC-' || lpad(i::VARCHAR, 7, '0') AS account_id,
                'Account ' || i || ' ' || (['Ltd', 'Inc', 'GmbH', 'SA', 'LLC'])[1 + i % 5] AS name,
                {industries}[1 + (hash(i, 'industry') % {len(INDUSTRIES)})::INTEGER] AS industry,
                round(10000 + (hash(i, 'arr') % 50000000)::DOUBLE, 2) AS annual_revenue,
                (1 + hash(i, 'emp') % 5000)::INTEGER AS employees,
                'https://www.account' || i || '.example.com' AS website,
                -- Every tenth account belongs to a group headed by an earlier account.
                CASE WHEN i >= 2000 AND i % 10 = 0
                     THEN 'ACC-' || lpad((i // 1000)::VARCHAR, 7, '0') END AS parent_account_id,
                TIMESTAMP '2026-01-01' + to_minutes((i % 100000)::BIGINT) AS updated_at
            FROM range(1, {n} + 1) t(i)
            """
        )
        per = size.contacts_per_account
        con.execute(
            f"""
            CREATE OR REPLACE TABLE crm_contacts AS
            SELECT
                'CON-' || lpad((a * {per} + k)::VARCHAR, 8, '0') AS contact_id,
                'ACC-' || lpad(a::VARCHAR, 7, '0') AS account_id,
                (['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Ken', 'Frances', 'Linus'])[1 + (a + k) % 8]
                    AS first_name,
                'Person' || (a * {per} + k) AS last_name,
                'person' || (a * {per} + k) || '@account' || a || '.example.com' AS email,
                {titles}[1 + (hash(a, k) % {len(TITLES)})::INTEGER] AS title,
                '+1 555 ' || lpad(((a * {per} + k) % 10000)::VARCHAR, 4, '0') AS phone,
                (a + k) % 13 = 0 AS opted_out
            FROM range(1, {n} + 1) a(a), range(0, {per}) k(k)
            """
        )
        if size.bad_emails:
            # Rows Salesforce refuses: an email that is not an address.
            con.execute(
                f"""
                UPDATE crm_contacts SET email = 'not-an-email-' || contact_id
                WHERE contact_id IN (SELECT contact_id FROM crm_contacts ORDER BY contact_id
                                     LIMIT {size.bad_emails})
                """
            )
            # A duplicated primary key: both rows are held back as DUPLICATE_PRIMARY_KEY.
            con.execute(
                """
                INSERT INTO crm_contacts
                SELECT * REPLACE ('Duplicate' AS last_name)
                FROM crm_contacts ORDER BY contact_id DESC LIMIT 1
                """
            )
        opp = size.opportunities_per_account
        con.execute(
            f"""
            CREATE OR REPLACE TABLE crm_opportunities AS
            SELECT
                'OPP-' || lpad((a * {opp} + k)::VARCHAR, 8, '0') AS opportunity_id,
                'ACC-' || lpad(a::VARCHAR, 7, '0') AS account_id,
                'Renewal ' || (2026 + k) || ' for account ' || a AS name,
                {stages}[1 + (hash(a, k, 'stage') % {len(STAGES)})::INTEGER] AS stage,
                round(1000 + (hash(a, k, 'amount') % 250000)::DOUBLE, 2) AS amount,
                DATE '2026-12-31' + ((hash(a, k) % 365)::INTEGER) AS close_date
            FROM range(1, {n} + 1) a(a), range(0, {opp}) k(k)
            """
        )
        if size.bad_emails:
            # A deal without a close date: Salesforce requires CloseDate.
            con.execute(
                "UPDATE crm_opportunities SET close_date = NULL "
                "WHERE opportunity_id = (SELECT min(opportunity_id) FROM crm_opportunities)"
            )
        # Activity that only grows: calls logged against accounts through November 2026,
        # for the partitioned `calls` model (one Dagster partition per day). The times are
        # naive UTC, as docs/models.md asks of a naive partition column.
        con.execute(
            f"""
            CREATE OR REPLACE TABLE crm_calls AS
            SELECT
                'CALL-' || lpad(i::VARCHAR, 8, '0') AS call_id,
                'ACC-' || lpad((1 + hash(i, 'account') % {n})::VARCHAR, 7, '0') AS account_id,
                (['Call', 'Send Quote', 'Other'])[1 + (hash(i, 'subject') % 3)::INTEGER]
                    AS subject,
                'Call ' || i || ' about the renewal' AS notes,
                (30 + hash(i, 'duration') % 1800)::INTEGER AS duration_s,
                TIMESTAMP '2026-11-01' + to_minutes(((i * 7919) % (30 * 24 * 60))::BIGINT)
                    AS occurred_at
            FROM range(1, {max(1, n // 5)} + 1) t(i)
            """
        )
        counts = {
            table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("crm_accounts", "crm_contacts", "crm_opportunities", "crm_calls")
        }
    finally:
        con.close()
    return counts


def change_a_slice(path: Path, share: float = 0.01) -> dict[str, int]:
    """Edit, add and remove a small share of rows, as a day of CRM activity would."""
    con = duckdb.connect(str(path))
    try:
        total = con.execute("SELECT count(*) FROM crm_accounts").fetchone()[0]
        step = max(1, int(1 / share))
        changed = con.execute(
            f"UPDATE crm_accounts SET annual_revenue = annual_revenue + 1000, "
            f"updated_at = updated_at + INTERVAL 1 DAY "
            f"WHERE CAST(substr(account_id, 5) AS INTEGER) % {step} = 1"
        ).fetchone()[0]
        added = max(1, total // (step * 10))
        con.execute(
            f"""
            INSERT INTO crm_accounts
            SELECT 'ACC-' || lpad(i::VARCHAR, 7, '0'), 'New account ' || i, 'Technology',
                   50000, 10, NULL, NULL, TIMESTAMP '2026-11-25'
            FROM range({total} + 1, {total} + 1 + {added}) t(i)
            """
        )
        contacts_changed = con.execute(
            f"UPDATE crm_contacts SET title = 'Head of RevOps' "
            f"WHERE CAST(substr(contact_id, 5) AS INTEGER) % {step} = 3"
        ).fetchone()[0]
    finally:
        con.close()
    return {
        "accounts_changed": changed,
        "accounts_added": added,
        "contacts_changed": contacts_changed,
    }
