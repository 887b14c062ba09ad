{{ config(partition_by=partition_by_game_date()) }}

{#- One row per claimed prediction request. The dispatcher inserts claims and
    confirms them once the publish is acknowledged; dbt only creates the table. -#}
select
    -- keys
    cast(null as string) as request_id,
    cast(null as date) as game_date,
    cast(null as string) as player_lookup,
    cast(null as string) as game_id,
    cast(null as {{ dbt.type_bigint() }}) as attempt,

    -- who asked
    cast(null as string) as batch_id,
    cast(null as string) as trigger_source,

    -- claim -> publish
    cast(null as {{ dbt.type_timestamp() }}) as claimed_at,
    cast(null as {{ dbt.type_timestamp() }}) as published_at,
    cast(null as string) as message_id

limit 0  -- the shape only: the dispatcher writes the rows -- noqa: AM09
