"""Deciding: the agent catalog, the Plano prompt contract, decision engines and routing policies.

Given typed requests, returns typed decisions. Knows nothing about Kafka or Redis.
"""
