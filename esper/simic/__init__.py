"""Simic: teaching the GNN policy from episodes (complete short training runs) with PPO."""
