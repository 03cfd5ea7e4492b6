"""Resource exports: the service logic shared by the API, the Kafka consumer and the flows.

Modules: ``identity`` (x-rh-identity), ``requests`` (new exports and their request
messages), ``outbox`` (publishing those messages), ``results`` (source results from
the upload API and from Kafka, one code path), ``formats`` (checking json/csv),
``packaging`` (the zip), ``queries`` (listing, lookup, deletion), ``sweep`` (sources
that never answer), ``consumer`` (the results-topic loop), ``files`` (storage paths).
"""
