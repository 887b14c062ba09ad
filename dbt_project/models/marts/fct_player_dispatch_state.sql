with

dispatch_state as (

    select * from {{ ref('int_player_dispatch_state') }}  -- noqa: PRS

),

final as (

    select
        -- keys
        game_date,
        player_lookup,
        game_id,

        -- what a prediction request carries
        team_abbr,
        opponent_team_abbr,
        is_home,
        current_points_line,

        -- state
        state,
        reason,
        has_features,
        is_ready,
        systems_predicted,

        -- requests
        request_attempts,
        last_requested_at,
        lease_expires_at,
        next_attempt,
        next_request_id,
        request_fields,
        can_force_request

    from dispatch_state

)

select * from final
