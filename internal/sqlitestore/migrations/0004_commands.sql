-- 0004_commands: reserved (filled in by its feature branch).
SELECT 1;
