-- Demo warehouse tables (DuckDB, built by sf_activation.demo_data):
--   crm_accounts(account_id, name, industry, annual_revenue, employees, website,
--                parent_account_id, updated_at)
--   crm_contacts(contact_id, account_id, first_name, last_name, email, title, phone, opted_out)
--   crm_opportunities(opportunity_id, account_id, name, stage, amount, close_date)
--
-- One row per account. Accounts without a parent come first so a parent is usually
-- created before the children that look it up (a child sent first is rejected with
-- INVALID_FIELD for the lookup and retried on the next run).
SELECT
    account_id,
    name,
    industry,
    annual_revenue AS arr_usd,
    employees,
    website,
    parent_account_id AS parent_id
FROM crm_accounts
ORDER BY parent_account_id IS NOT NULL, account_id
