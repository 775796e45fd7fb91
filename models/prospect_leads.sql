-- Demo warehouse tables (DuckDB, built by sf_activation.demo_data):
--   crm_accounts(account_id, name, industry, annual_revenue, employees, website,
--                parent_account_id, updated_at)
--   crm_contacts(contact_id, account_id, first_name, last_name, email, title, phone, opted_out)
--   crm_opportunities(opportunity_id, account_id, name, stage, amount, close_date)
--
-- The SDR call list: people at accounts whose deals are still early (Prospecting or
-- Qualification), who have not opted out. When the deal moves on, or the person opts
-- out, the row leaves this query and the mirror deletes the Lead.
SELECT DISTINCT
    c.contact_id AS lead_key,
    c.first_name,
    c.last_name,
    c.email,
    c.title,
    c.phone,
    a.name AS company,
    a.website
FROM crm_contacts AS c
JOIN crm_accounts AS a USING (account_id)
WHERE NOT c.opted_out
  AND EXISTS (
      SELECT 1 FROM crm_opportunities AS o
      WHERE o.account_id = c.account_id AND o.stage IN ('Prospecting', 'Qualification')
  )
