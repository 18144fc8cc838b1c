"""Stress and soak runs (not part of the test suite; minutes each):

    python -m tests.stress.stress_malformed   # 100,000 malformed + valid readings over MQTT
    python -m tests.stress.soak_replay        # 1,000,000 readings through the live pipeline
"""
