with

source as (

    select * from {{ source('nba_analytics', 'upcoming_player_game_context') }}  -- noqa: PRS

),

renamed as (

    select
        -- keys
        player_lookup,
        game_id,
        game_date,

        -- matchup
        team_abbr,
        opponent_team_abbr,
        home_game as is_home,

        -- availability
        upper(player_status) as player_status,
        cast(avg_minutes_per_game_last_7 as numeric)
            as avg_minutes_last_7,
        cast(current_points_line as numeric)
            as current_points_line,

        -- lineage
        processed_at

    from source

)

select * from renamed
