-- Sales calls, one Task each; the partition column `occurred_at` is returned beside the
-- mapped columns, and each run reads one day of it (partition_by in calls.yml).
SELECT
    call_id,
    subject,
    'Call' AS call_type,
    'Completed' AS status,
    notes,
    duration_s,
    CAST(occurred_at AS DATE) AS call_date,
    occurred_at
FROM crm_calls
