-- One PostgreSQL server, two databases: the application's and Prefect's.
CREATE DATABASE geoexport;
CREATE DATABASE prefect;
