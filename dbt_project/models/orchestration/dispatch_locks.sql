{{ config(partition_by=partition_by_game_date()) }}

{#- One row per game date. A claim updates its date's row inside the claim
    transaction, so two dispatchers claiming the same date conflict and one retries. -#}
select
    cast(null as date) as game_date,
    cast(null as string) as holder_batch_id,
    cast(null as {{ dbt.type_timestamp() }}) as locked_at

limit 0  -- the shape only: the dispatcher writes the rows -- noqa: AM09
