{#- Per player and date: the dispatcher's requests and whether one holds a lease now.
    A published request holds var request_lease_minutes from its publish; a claim never
    confirmed holds only var claim_lease_seconds from its claim. -#}
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
        max(coalesce(published_at, claimed_at)) as last_requested_at,
        max(published_at) as last_published_at,
        max(case when published_at is null then claimed_at end) as last_unconfirmed_claim_at
    from ledger
    group by game_date, player_lookup

),

leases as (

    select
        *,
        {{ timestamp_add_minutes('last_published_at', var('request_lease_minutes')) }}
            as publish_lease_expires_at,
        {{ timestamp_add_seconds('last_unconfirmed_claim_at', var('claim_lease_seconds')) }}
            as claim_expires_at
    from aggregated

),

final as (

    select
        game_date,
        player_lookup,
        request_attempts,
        last_attempt,
        requests_published,
        first_claimed_at,
        first_published_at,
        last_requested_at,
        claim_expires_at,
        case
            when claim_expires_at is null then publish_lease_expires_at
            when publish_lease_expires_at is null then claim_expires_at
            when claim_expires_at > publish_lease_expires_at then claim_expires_at
            else publish_lease_expires_at
        end as lease_expires_at,
        coalesce(publish_lease_expires_at > {{ as_of_timestamp() }}, false)
        or coalesce(claim_expires_at > {{ as_of_timestamp() }}, false) as is_leased,
        -- held only by a claim nobody confirmed yet: its dispatcher is publishing, or died
        coalesce(claim_expires_at > {{ as_of_timestamp() }}, false)
        and not coalesce(publish_lease_expires_at > {{ as_of_timestamp() }}, false)
            as is_claim_unconfirmed
    from leases

)

select * from final
