"""Model presets: each module gives a Preset (stages.models.preset); stages.models.catalog lists
them by model.name, stages.models.options holds their params."""
