-- The feed service keeps its own database; the collector uses `nunchi` (POSTGRES_DB).
CREATE DATABASE feed OWNER nunchi;
