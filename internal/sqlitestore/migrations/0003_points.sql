-- 0003_points: reserved (filled in by its feature branch).
SELECT 1;
