"""Benchmarks that measure and print figures; they never gate CI on time."""
