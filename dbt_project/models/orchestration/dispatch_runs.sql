{{ config(partition_by=partition_by_game_date()) }}

{#- The run log: one row per dispatcher invocation. Written by the dispatcher;
    dbt only creates the table. -#}
select
    -- keys
    cast(null as string) as run_id,
    cast(null as date) as game_date,

    -- what ran
    cast(null as string) as command,
    cast(null as string) as trigger_source,
    cast(null as string) as batch_id,

    -- result
    cast(null as string) as outcome,
    cast(null as {{ dbt.type_bigint() }}) as exit_code,
    cast(null as string) as error_message,

    -- counts at dispatch time
    cast(null as {{ dbt.type_bigint() }}) as players_expected,
    cast(null as {{ dbt.type_bigint() }}) as players_ready,
    cast(null as {{ dbt.type_bigint() }}) as players_predicted,
    cast(null as {{ dbt.type_bigint() }}) as players_in_flight,
    cast(null as {{ dbt.type_bigint() }}) as requests_published,

    -- timings (UTC)
    cast(null as {{ dbt.type_timestamp() }}) as started_at,
    cast(null as {{ dbt.type_timestamp() }}) as finished_at,
    cast(null as {{ dbt.type_bigint() }}) as duration_ms

limit 0  -- the shape only: the dispatcher writes the rows -- noqa: AM09
