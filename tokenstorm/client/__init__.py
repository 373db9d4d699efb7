"""The load client without Locust: the HTTP client with receive timestamps, stream accounting,
scenarios and data sources, arrival schedules, the self-check monitor and the record files."""
