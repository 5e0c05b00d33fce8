"""Configuration as data: sources (csv_config), datasets, the database schema."""
