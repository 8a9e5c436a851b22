"""What the API and the worker share: settings, database, tables, job states, storage."""
