"""`pump`: a water-pump rig with the channels of the SKAB testbed, one reading a second.

SKAB, the Skoltech Anomaly Benchmark (Katser and Kozitsin 2020,
github.com/waico/SKAB): a circulation pump testbed with these eight channels,
named exactly as there:

=====================  =====  =====================================================
Accelerometer1RMS      g      vibration RMS, ~0.0265 +/- 0.0003
Accelerometer2RMS      g      vibration RMS, ~0.040 +/- 0.0008 (shares a vibration mode)
Current                A      motor current, ~0.8-1.6 (SKAB anomaly-free runs reach 2.5)
Pressure               bar    outlet pressure: noisy 0.3279-bar steps, mostly 0.05 / 0.38
Temperature            degC   motor casing, ~70-90, slow (thermal lag ~20 min)
Thermocouple           degC   fluid, ~25-30, very slow
Voltage                V      supply, 230 +/- 10.7 sampled noise (220-250)
Volume Flow RateRMS    l/min  ~31-33, reported in near-integer steps
=====================  =====  =====================================================

Magnitudes, noise and the Pressure quantisation (levels 0.054711 + k * 0.327927)
were measured on SKAB `valve1/0.csv` (1,147 rows at 1 Hz).

Physical couplings: the operator moves an inlet/outlet valve between set
points every 5-30 minutes; closing it lowers the flow and raises the pressure;
the current follows the hydraulic load (flow and pressure) and the supply
voltage (corr ~0.3 as in SKAB); the motor temperature follows the current
through a thermal lag, the fluid temperature follows the motor slowly; the two
accelerometers share a vibration mode and rise with flow.
"""

from __future__ import annotations

import math

import numpy as np

from firmware_sim.devices.base import DeviceModel
from firmware_sim.signals import AR1, HOUR, Lag

CHANNELS = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)
PRESSURE_STEP = 0.327927
PRESSURE_ZERO = 0.054711


class Pump(DeviceModel):
    name = "pump"
    default_period_s = 1.0

    def __init__(self, rng: np.random.Generator, period_s: float, t0: float) -> None:
        super().__init__(rng, period_s, t0)
        self.channels = CHANNELS
        self.fault_channels = CHANNELS
        inf = math.inf
        self.bounds = {
            "Accelerometer1RMS": (0.0, inf),
            "Accelerometer2RMS": (0.0, inf),
            "Current": (0.0, inf),
            "Pressure": (-1.0, inf),
            "Temperature": (-40.0, 200.0),
            "Thermocouple": (-40.0, 200.0),
            "Voltage": (0.0, inf),
            "Volume Flow RateRMS": (0.0, inf),
        }
        self.valve_target = float(rng.uniform(0.9, 1.0))
        self.next_change = t0 + float(rng.uniform(5.0, 30.0)) * 60.0
        self.valve = Lag(10.0, self.valve_target)
        self.flow_ar = AR1(rng, 30.0, 0.12)
        self.vibration = AR1(rng, 5.0, 1.0)
        self.volt_slow = AR1(rng, 600.0, 3.0)
        self.ambient = AR1(rng, 3.0 * HOUR, 0.8)
        self.fluid = AR1(rng, 0.5 * HOUR, 0.05)
        self.load = Lag(300.0, 1.03)
        self.motor = Lag(1200.0, 76.5 + float(rng.uniform(-2.0, 2.0)))

    def _valve_targets(self, t: np.ndarray) -> np.ndarray:
        target = np.empty(t.size, dtype=np.float64)
        i = 0
        while i < t.size:
            j = int(np.searchsorted(t, self.next_change))
            target[i:j] = self.valve_target
            if j >= t.size:
                break
            self.valve_target = float(self.rng.uniform(0.9, 1.0))
            self.next_change += float(self.rng.uniform(5.0, 30.0)) * 60.0
            i = j
        return target

    def simulate(self, t: np.ndarray) -> np.ndarray:
        rng, n, dt = self.rng, t.size, self.period_s
        valve = self.valve.apply(self._valve_targets(t), dt)
        flow = 31.0 + 20.0 * (valve - 0.9) + self.flow_ar.sample(n, dt)
        pressure = 0.08 + 1.5 * (1.0 - valve)
        volt = np.clip(230.5 + self.volt_slow.sample(n, dt) + rng.normal(0.0, 10.3, n), 195, 262)
        load = 0.45 + 0.016 * flow + 0.8 * pressure
        current = load + 0.008 * (volt - 230.0) + rng.normal(0.0, 0.24, n)
        motor = self.motor.apply(
            58.0 + 18.0 * self.load.apply(load, dt) + self.ambient.sample(n, dt), dt
        )
        vib = self.vibration.sample(n, dt)

        out = np.empty((n, len(CHANNELS)), dtype=np.float64)
        out[:, 0] = 0.0265 + 0.00022 * vib + 0.00015 * (flow - 32.0) + rng.normal(0, 0.00022, n)
        out[:, 1] = 0.0402 + 0.0004 * vib + rng.normal(0.0, 0.0006, n)
        out[:, 2] = current
        noisy_p = pressure + rng.normal(0.0, 0.25, n)
        out[:, 3] = PRESSURE_ZERO + PRESSURE_STEP * np.round(
            (noisy_p - PRESSURE_ZERO) / PRESSURE_STEP
        )
        out[:, 4] = motor + rng.normal(0.0, 0.05, n)
        out[:, 5] = (
            25.4 + 0.03 * (motor - 60.0) + self.fluid.sample(n, dt) + rng.normal(0, 0.004, n)
        )
        out[:, 6] = volt
        out[:, 7] = np.round(flow + rng.normal(0.0, 0.35, n)) + np.abs(rng.normal(0.0, 0.003, n))
        return self.clip(out)
