{#- Per player and date: the dispatcher's requests and whether one holds a lease now. -#}
with

ledger as (

    select * from {{ ref('request_ledger') }}  -- noqa: PRS

),

aggregated as (

    select
        game_date,
        player_lookup,
        count(*) as request_attempts,
        max(attempt) as last_attempt,
        count(published_at) as requests_published,
        min(claimed_at) as first_claimed_at,
        min(published_at) as first_published_at,
        max(coalesce(published_at, claimed_at)) as last_requested_at
    from ledger
    group by game_date, player_lookup

),

final as (

    select
        *,
        {{ timestamp_add_minutes('last_requested_at', var('request_lease_minutes')) }}
            as lease_expires_at,
        {{ timestamp_add_minutes('last_requested_at', var('request_lease_minutes')) }}
        > {{ as_of_timestamp() }} as is_leased
    from aggregated

)

select * from final
