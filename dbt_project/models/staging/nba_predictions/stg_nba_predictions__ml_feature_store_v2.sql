with

source as (

    select * from {{ source('nba_predictions', 'ml_feature_store_v2') }}  -- noqa: PRS

),

renamed as (

    select
        -- keys
        player_lookup,
        game_id,
        game_date,

        -- feature vector
        features,
        feature_names,
        feature_count,
        feature_version,
        cast(feature_quality_score as numeric)
            as feature_quality_score,
        coalesce(is_production_ready, false) as is_production_ready,

        -- lineage
        created_at,
        coalesce(updated_at, created_at) as updated_at

    from source

)

select * from renamed
