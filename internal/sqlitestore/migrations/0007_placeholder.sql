-- 0007: placeholder for a step developed on another branch; replaced when that branch is merged.
SELECT 1;
