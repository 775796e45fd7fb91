select
    opportunity_id,
    account_id,
    name,
    stage,
    amount,
    close_date
from {{ source('raw', 'crm_opportunities') }}
