-- 0005_rules: reserved (filled in by its feature branch).
SELECT 1;
