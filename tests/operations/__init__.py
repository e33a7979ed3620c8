"""Operations: metric rollups, live metrics and dashboard aggregates."""
