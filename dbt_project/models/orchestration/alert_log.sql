{{ config(partition_by=partition_by_game_date()) }}

{#- The alert log: one row per alert and channel, sent, suppressed by the dedup
    rules, or failed on its channel (retried at the next run). The dedup state of a
    rule on a date is this table's latest sent rows. Written by the dispatcher; dbt
    only creates the table. -#}
select
    -- keys
    cast(null as string) as alert_id,
    cast(null as date) as game_date,
    cast(null as string) as run_id,

    -- what
    cast(null as string) as rule,
    cast(null as string) as level,
    cast(null as string) as kind,
    cast(null as string) as message,
    cast(null as string) as dedup_key,

    -- where it went
    cast(null as string) as channel,
    cast(null as string) as status,
    cast(null as string) as error_message,
    cast(null as {{ dbt.type_timestamp() }}) as created_at

limit 0  -- the shape only: the dispatcher writes the rows -- noqa: AM09
