"""Workflows: plain functions taking a composed config and returning results."""
