"""The pipeline actors and their Kafka glue: consumer -> decoder -> router."""
