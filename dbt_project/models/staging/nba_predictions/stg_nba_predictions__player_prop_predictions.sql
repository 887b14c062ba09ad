with

source as (

    select * from {{ source('nba_predictions', 'player_prop_predictions') }}  -- noqa: PRS

),

renamed as (

    select
        -- keys
        prediction_id,
        system_id,
        player_lookup,
        game_id,
        game_date,

        -- prediction
        cast(predicted_points as numeric) as predicted_points,
        cast(confidence_score as numeric) as confidence_score,
        recommendation,
        cast(current_points_line as numeric)
            as current_points_line,
        coalesce(is_active, false) as is_active,

        -- lineage
        created_at

    from source

)

select * from renamed
