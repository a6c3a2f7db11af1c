"""Framed serial protocol between instrument firmware and the edge daemon, and a simulated instrument."""
