select
    contact_id,
    account_id,
    first_name,
    last_name,
    email,
    title,
    phone,
    opted_out
from {{ source('raw', 'crm_contacts') }}
