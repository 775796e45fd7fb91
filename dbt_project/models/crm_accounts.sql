select
    account_id,
    name,
    industry,
    annual_revenue,
    employees,
    website,
    parent_account_id,
    updated_at
from {{ source('raw', 'crm_accounts') }}
