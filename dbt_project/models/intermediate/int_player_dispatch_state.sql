{#- One row per expected player and date: the dispatch state and why. -#}
with

slate as (

    select * from {{ ref('int_slate_players') }}  -- noqa: PRS

),

features as (

    select * from {{ ref('int_player_features') }}  -- noqa: PRS

),

predictions as (

    select * from {{ ref('int_player_predictions') }}  -- noqa: PRS

),

requests as (

    select * from {{ ref('int_player_requests') }}  -- noqa: PRS

),

game_days as (

    select * from {{ ref('int_game_days') }}  -- noqa: PRS

),

joined as (

    select
        slate.game_date,
        slate.player_lookup,
        slate.game_id,
        slate.team_abbr,
        slate.opponent_team_abbr,
        slate.is_home,
        slate.current_points_line,

        -- the NBA schedule decides whether the date is dispatched at all
        game_days.game_date is not null as is_game_day,

        features.player_lookup is not null as has_features,
        coalesce(features.is_production_ready, false) as is_ready,
        features.feature_quality_score,
        features.features_updated_at,

        coalesce(predictions.systems_predicted, 0) as systems_predicted,
        coalesce(predictions.is_predicted, false) as is_predicted,
        predictions.last_predicted_at,

        coalesce(requests.request_attempts, 0) as request_attempts,
        -- the highest attempt, not the count: a released claim leaves a gap
        coalesce(requests.last_attempt, 0) + 1 as next_attempt,
        requests.first_published_at,
        requests.last_requested_at,
        requests.lease_expires_at,
        coalesce(requests.is_leased, false) as is_leased,
        requests.claim_expires_at,
        coalesce(requests.is_claim_unconfirmed, false) as is_claim_unconfirmed

    from slate
    left join features
        on
            slate.game_date = features.game_date
            and slate.player_lookup = features.player_lookup
    left join predictions
        on
            slate.game_date = predictions.game_date
            and slate.player_lookup = predictions.player_lookup
    left join requests
        on
            slate.game_date = requests.game_date
            and slate.player_lookup = requests.player_lookup
    left join game_days
        on slate.game_date = game_days.game_date
    where slate.is_expected

),

final as (

    select
        *,
        case
            when is_predicted then 'predicted'
            when not is_game_day then 'not_ready'
            when not is_ready then 'not_ready'
            when is_leased then 'in_flight'
            else 'pending'
        end as state,
        case
            when is_predicted
                then 'all {{ var("required_systems") | length }} systems predicted'
            when not is_game_day
                then 'no game on the NBA schedule for this date'
            when not has_features
                then 'no row in ml_feature_store_v2'
            when not is_ready
                then 'features not production ready'
            when is_claim_unconfirmed
                then 'claimed, publish not confirmed yet: pending again when the claim lease ends'
            when is_leased
                then 'requested, waiting for predictions inside the lease'
            when request_attempts > 0
                then
                    'lease expired, '
                    || cast(systems_predicted as string)
                    || ' of {{ var("required_systems") | length }} systems predicted'
            else
                'ready, '
                || cast(systems_predicted as string)
                || ' of {{ var("required_systems") | length }} systems predicted'
        end as reason
    from joined

),

with_request_id as (

    select
        *,
        {{ request_id('game_date', 'player_lookup', 'next_attempt') }} as next_request_id,
        {{ float_array_or_empty('current_points_line') }} as line_values,
        -- `start --force` requests predicted players again, once per lease
        is_game_day
        and (
            state = 'pending' or (state = 'predicted' and not is_leased)
        ) as can_force_request
    from final

)

select
    *,
    -- The prediction request's fields that belong to the player, as JSON; the
    -- dispatcher adds the claimed request_id and the run's batch_id, trigger_source
    -- and requested_at, so that Python only encodes.
    {{ json_object([
        ('player_lookup', 'player_lookup'),
        ('game_date', 'cast(game_date as string)'),
        ('game_id', 'game_id'),
        ('line_values', 'line_values'),
        ('team_abbr', 'team_abbr'),
        ('opponent_team_abbr', 'opponent_team_abbr'),
        ('is_home', 'coalesce(is_home, false)'),
    ]) }} as request_fields
from with_request_id
