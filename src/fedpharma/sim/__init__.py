"""Simulation: all sites in one process over the in-process channel; same code as deployment."""
