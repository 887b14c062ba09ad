with

source as (

    select * from {{ source('nba_raw', 'nbac_schedule') }}  -- noqa: PRS

),

renamed as (

    select
        -- keys
        game_id,
        game_date,

        -- matchup
        home_team_tricode as home_team_abbr,
        away_team_tricode as away_team_abbr,

        -- progress: 1 scheduled, 2 live, 3 final
        cast(game_status as int64) as game_status

    from source

)

select * from renamed
