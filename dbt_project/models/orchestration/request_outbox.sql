{{ config(partition_by=partition_by_game_date()) }}

{#- The local transport: prediction requests "published" into the warehouse file,
    consumed by the reference worker. Pub/Sub replaces it in production. -#}
select
    -- keys
    cast(null as string) as message_id,
    cast(null as string) as topic,
    cast(null as date) as game_date,

    -- the message as Pub/Sub would carry it
    cast(null as string) as data,
    cast(null as string) as attributes,
    cast(null as {{ dbt.type_timestamp() }}) as published_at,

    -- consumption by the worker
    cast(null as {{ dbt.type_timestamp() }}) as acked_at

limit 0  -- the shape only: the dispatcher writes the rows -- noqa: AM09
