"""The live dashboard: one server-rendered page and the JSON it polls."""
