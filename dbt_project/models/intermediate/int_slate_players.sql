{#- Every Phase 3 player of a date (latest row), whether expected to play and why not. -#}
with

context as (

    select * from {{ ref('stg_nba_analytics__upcoming_player_game_context') }}  -- noqa: PRS

),

latest as (

    select
        *,
        row_number() over (
            partition by game_date, player_lookup
            order by processed_at desc
        ) as row_num
    from context

),

final as (

    select
        -- keys
        game_date,
        player_lookup,
        game_id,

        -- matchup
        team_abbr,
        opponent_team_abbr,
        is_home,
        current_points_line,

        -- availability
        player_status,
        avg_minutes_last_7,
        case
            when
                player_status
                in {{ sql_string_list(var('excluded_player_statuses') | map('upper') | list) }}
                then 'status ' || player_status
            when avg_minutes_last_7 is null
                then 'no recent minutes'
            when avg_minutes_last_7 < {{ var('min_minutes') }}
                then 'below {{ var("min_minutes") }} minutes per game'
        end as filter_reason

    from latest
    where row_num = 1

)

select
    *,
    filter_reason is null as is_expected
from final
