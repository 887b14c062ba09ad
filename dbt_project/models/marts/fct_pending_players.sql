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

        -- the request the dispatcher claims and publishes
        next_request_id,
        next_attempt,
        request_fields,
        team_abbr,
        opponent_team_abbr,
        is_home,
        current_points_line,

        -- why it is pending
        reason,
        systems_predicted,
        request_attempts

    from dispatch_state
    where state = 'pending'

)

select * from final
