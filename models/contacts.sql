-- Demo warehouse tables (DuckDB, built by sf_activation.demo_data):
--   crm_accounts(account_id, name, industry, annual_revenue, employees, website,
--                parent_account_id, updated_at)
--   crm_contacts(contact_id, account_id, first_name, last_name, email, title, phone, opted_out)
--   crm_opportunities(opportunity_id, account_id, name, stage, amount, close_date)
--
-- One row per contact; the account is looked up by its External ID, so contacts of an
-- account that has not been synced yet are rejected and retried on the next run.
SELECT
    contact_id,
    account_id,
    first_name,
    last_name,
    email,
    title,
    phone,
    opted_out
FROM crm_contacts
