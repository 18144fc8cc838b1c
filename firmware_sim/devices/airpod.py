"""`airpod`: an outdoor air-quality pod, modelled on the EPA CAIRSENSE Denver deployment.

Feinberg et al. (2018), "Long-term evaluation of air sensor technology under
ambient conditions in Denver, Colorado", Atmos. Meas. Tech. 11, 4605-4615,
doi:10.5194/amt-11-4605-2018: a seven-month campaign (2015-2016) at an urban
regulatory site, high-altitude, cool and dry; PM, O3 and NO2 sensors of
several makes in triplicate beside reference (FEM) monitors; data complete
when the loggers worked; one make's O3 response slope fell from about 1.2 to
0.6 between the audits before and after the campaign.

Channels (CSV column order), one reading a minute by default (logger averages):

=================  ======  ==================================================
pm25_pms_1..3      ug/m3   Plantower PMS5003 (optical, laser), triplicate
pm25_opc_1..3      ug/m3   Alphasense OPC-N2 (optical particle counter)
pm25_dylos_1..3    ug/m3   Dylos DC1100 Pro (counts converted to mass)
o3_1..3            ppb     ozone sensors (electrochemical / metal oxide)
no2_1..3           ppb     NO2 electrochemical sensors
temp_c             degC    air temperature
rh_pct             %       relative humidity, 5-100
=================  ======  ==================================================

The makes are common low-cost sensors chosen to give three distinct response
characters; they are not a claim about which makes were in Denver.

The model, and the figures it rests on:

- Reference PM2.5: typical Denver 5-15 ug/m3 (base 8, a little higher in
  winter), morning rush-hour and evening boundary-layer peaks, an afternoon
  minimum, lower at weekends; multi-day inversions multiply it 1.8-4x (episodes
  to 30-60 ug/m3) until a front or wind event clears them; wind events dilute.
- O3: 20-70 ppb daytime peak (mid-afternoon, larger in summer), titrated by NO2
  at night, at rush hour and in inversions.
- NO2: about 10-40 ppb with rush-hour peaks (07-09 and 17-20 local), weekday
  higher, raised in inversions.
- Temperature and dew point: Denver seasonal means (Jan about -1 C, Jul about
  23 C), a wide dry-climate diurnal swing (+/-7 C), synoptic weather; RH from
  the Magnus formula, mostly 20-75 %, with humid spells (snow, storms) to 90-100 %.
- Optical PM sensors overestimate in humid air: hygroscopic growth with a
  kappa-Koehler form, 1 + c * aw / (1 - aw), normalised at 35 % RH, so the
  reading rises by ~1.1x at 60 %, 1.3-1.7x at 80 % and 2-4x above 90 %
  (Crilley et al. 2018, AMT 11, 709; RH-driven overestimation above ~75-85 %).
  PMS5003 reads about 1.5x the reference (cf. the US-wide PurpleAir correction,
  Barkjohn et al. 2021, AMT 14, 4617).
- Sensor-to-sensor spread within a make: per-unit slope (8-15 %) and offset,
  a slow per-unit wander, and per-reading noise; noise grows for short periods.
- Slow drift: each O3 unit's slope decays from about 1.2 with a half-life of
  the Denver campaign (about 210 days), so a week loses ~2 % (unlabelled,
  normal ageing); faster drift and step changes are injected as labelled faults.
- Times of day use Mountain Standard Time (UTC-7) all year.
"""

from __future__ import annotations

import math

import numpy as np

from firmware_sim.devices.base import DeviceModel
from firmware_sim.signals import (
    AR1,
    DAY,
    HOUR,
    Episodes,
    circ_gauss,
    day_of_week,
    day_of_year,
    local_hour,
)

TZ_HOURS = -7.0
O3_SLOPE_HALF_LIFE_DAYS = 210.0  # Feinberg et al. 2018: ~1.2 -> ~0.6 over the campaign

#: make -> (slope vs reference, unit slope spread, offset sd, noise abs, noise rel, RH coefficient)
PM_MAKES: dict[str, tuple[float, float, float, float, float, float]] = {
    "pms": (1.45, 0.08, 0.5, 0.5, 0.05, 0.10),
    "opc": (1.10, 0.15, 1.0, 1.0, 0.10, 0.20),
    "dylos": (1.70, 0.12, 1.5, 1.5, 0.12, 0.15),
}
PM_CHANNELS = tuple(f"pm25_{make}_{k}" for make in PM_MAKES for k in (1, 2, 3))
GAS_CHANNELS = tuple(f"{gas}_{k}" for gas in ("o3", "no2") for k in (1, 2, 3))
CHANNELS = (*PM_CHANNELS, *GAS_CHANNELS, "temp_c", "rh_pct")


def season(t: np.ndarray) -> np.ndarray:
    """-1 in mid-January, +1 in mid-July."""
    return -np.cos(2.0 * np.pi * (day_of_year(t) - 15.0) / 365.2425)


def rh_from_dewpoint(temp_c: np.ndarray, dew_c: np.ndarray) -> np.ndarray:
    """Relative humidity (%) by the Magnus formula (Alduchov & Eskridge 1996 constants)."""
    b, c = 17.62, 243.12
    return 100.0 * np.exp(b * dew_c / (c + dew_c) - b * temp_c / (c + temp_c))


def hygroscopic_growth(rh_pct: np.ndarray, coef: float) -> np.ndarray:
    """Optical-PM overestimation factor vs dry air, 1 at 35 % RH."""
    aw = np.clip(rh_pct, 0.0, 97.0) / 100.0
    growth: np.ndarray = (1.0 + coef * aw / (1.0 - aw)) / (1.0 + coef * 0.35 / 0.65)
    return growth


class AirPod(DeviceModel):
    name = "airpod"
    default_period_s = 60.0

    def __init__(self, rng: np.random.Generator, period_s: float, t0: float) -> None:
        super().__init__(rng, period_s, t0)
        self.channels = CHANNELS
        self.fault_channels = CHANNELS
        self.groups = {
            **{f"pm25_{m}": tuple(f"pm25_{m}_{k}" for k in (1, 2, 3)) for m in PM_MAKES},
            "o3": ("o3_1", "o3_2", "o3_3"),
            "no2": ("no2_1", "no2_2", "no2_3"),
        }
        self.bounds = {ch: (0.0, math.inf) for ch in PM_CHANNELS + GAS_CHANNELS}
        self.bounds.update({"temp_c": (-40.0, 50.0), "rh_pct": (5.0, 100.0)})
        # noise per reading is quoted for 1-minute averages; shorter periods are noisier
        self.noise_scale = float(np.clip(math.sqrt(60.0 / period_s), 0.5, 4.0))
        self._weather(rng, t0)
        self._units(rng)

    def _weather(self, rng: np.random.Generator, t0: float) -> None:
        def inversion_rate(t: float) -> float:  # per day, most frequent in winter
            return 0.10 + 0.06 * float(-season(np.array([t]))[0])

        self.temp_syn = AR1(rng, 2.0 * DAY, 3.5)
        self.dew_syn = AR1(rng, 1.5 * DAY, 3.0)
        self.pm_syn = AR1(rng, 1.5 * DAY, 0.30)
        self.pm_fast = AR1(rng, 20.0 * 60.0, 0.15)
        self.no2_fast = AR1(rng, 30.0 * 60.0, 0.15)
        self.o3_syn = AR1(rng, 2.0 * DAY, 0.12)
        self.inversions = Episodes(
            rng, inversion_rate, 0.16, (12 * HOUR, 48 * HOUR), (0.8, 3.0), "build", t0
        )
        self.wind = Episodes(
            rng, lambda _t: 0.25, 0.25, (3 * HOUR, 12 * HOUR), (0.4, 0.8), "bump", t0
        )
        self.humid = Episodes(
            rng, lambda _t: 0.2, 0.2, (3 * HOUR, 18 * HOUR), (0.8, 1.0), "bump", t0
        )

    def _units(self, rng: np.random.Generator) -> None:
        self.pm_slope = np.empty(len(PM_CHANNELS))
        self.pm_offset = np.empty(len(PM_CHANNELS))
        for i, ch in enumerate(PM_CHANNELS):
            slope, spread, off_sd, *_ = PM_MAKES[ch.split("_")[1]]
            self.pm_slope[i] = slope * math.exp(rng.normal(0.0, spread))
            self.pm_offset[i] = rng.normal(0.0, off_sd)
        self.pm_wander = [AR1(rng, 6.0 * HOUR, 0.05) for _ in PM_CHANNELS]
        self.o3_slope0 = 1.2 * np.exp(rng.normal(0.0, 0.05, 3))
        self.o3_age0_days = rng.uniform(0.0, 30.0, 3)
        self.o3_offset = rng.normal(0.0, 2.0, 3)
        self.no2_slope = 0.9 * np.exp(rng.normal(0.0, 0.10, 3))
        self.no2_offset = rng.normal(0.0, 2.0, 3)

    def environment(self, t: np.ndarray) -> dict[str, np.ndarray]:
        """The true (reference) state of the air at times `t`."""
        n, dt = t.size, self.period_s
        hour, dow, summer = local_hour(t, TZ_HOURS), day_of_week(t, TZ_HOURS), season(t)
        inv = self.inversions.render(t)
        wind = np.clip(self.wind.render(t), 0.0, 0.9)
        humid = np.clip(self.humid.render(t), 0.0, 1.0)

        temp = (
            10.5
            + 11.5 * summer
            + 7.0 * (1.0 - 0.6 * humid) * np.cos(2.0 * np.pi * (hour - 15.0) / 24.0)
            + self.temp_syn.sample(n, dt)
            - 6.0 * wind
            - 2.0 * humid
        )
        dew = np.minimum(-3.0 + 9.0 * summer + self.dew_syn.sample(n, dt), temp - 2.0)
        dew = dew + humid * (temp - 0.3 - dew)
        rh = np.clip(rh_from_dewpoint(temp, dew), 5.0, 100.0)

        pm_syn = self.pm_syn.sample(n, dt)
        weekend_pm = np.where(dow == 5, 0.92, np.where(dow == 6, 0.88, 1.0))
        diurnal_pm = (
            1.0
            + 0.35 * circ_gauss(hour, 8.0, 1.5)
            + 0.40 * circ_gauss(hour, 21.0, 3.0)
            - 0.30 * circ_gauss(hour, 15.0, 2.5)
        )
        pm = (
            (7.5 - 1.0 * summer)
            * diurnal_pm
            * weekend_pm
            * np.exp(pm_syn + self.pm_fast.sample(n, dt) - 0.05)
            * (1.0 + inv)
            * (1.0 - 0.7 * wind)
        )

        weekday = np.where(dow == 5, 0.8, np.where(dow == 6, 0.65, 1.0))
        diurnal_no2 = (
            1.0
            + 0.9 * weekday * circ_gauss(hour, 7.5, 1.3)
            + 0.7 * weekday * circ_gauss(hour, 18.5, 2.0)
            - 0.4 * circ_gauss(hour, 14.0, 2.5)
        )
        no2 = (
            16.0
            * weekday**0.5
            * diurnal_no2
            * np.exp(0.5 * pm_syn + self.no2_fast.sample(n, dt))
            * (1.0 + 0.5 * inv)
            * (1.0 - 0.6 * wind)
        )

        day_amp = 22.0 + 16.0 * (summer + 1.0) / 2.0  # larger photochemical peak in summer
        photochem = (20.0 + day_amp * circ_gauss(hour, 14.5, 3.0)) * np.exp(
            self.o3_syn.sample(n, dt)
        )
        mixing = (1.0 - 0.12 * inv) * (1.0 + 0.25 * wind)  # trapped air titrates, wind mixes down
        o3 = photochem * mixing - 0.35 * (no2 - 16.0)  # NO + O3 -> NO2 titration
        return {
            "temp": temp,
            "rh": rh,
            "pm": np.maximum(pm, 0.3),
            "no2": np.maximum(no2, 1.0),
            "o3": np.maximum(o3, 1.0),
        }

    def simulate(self, t: np.ndarray) -> np.ndarray:
        env = self.environment(t)
        rng, n, dt, ns = self.rng, t.size, self.period_s, self.noise_scale
        out = np.empty((n, len(self.channels)), dtype=np.float64)
        pm = env["pm"]
        for i, ch in enumerate(PM_CHANNELS):
            _, _, _, noise_abs, noise_rel, rh_coef = PM_MAKES[ch.split("_")[1]]
            wander = np.exp(self.pm_wander[i].sample(n, dt))
            seen = self.pm_slope[i] * wander * pm * hygroscopic_growth(env["rh"], rh_coef)
            noise = rng.normal(0.0, 1.0, n) * ns * (noise_abs + noise_rel * pm)
            out[:, i] = seen + self.pm_offset[i] + noise
        col = len(PM_CHANNELS)
        age_days = self.o3_age0_days[None, :] + (t[:, None] - self.t0) / DAY
        o3_slope = self.o3_slope0[None, :] * 0.5 ** (age_days / O3_SLOPE_HALF_LIFE_DAYS)
        for k in range(3):
            out[:, col + k] = (
                o3_slope[:, k] * env["o3"]
                + self.o3_offset[k]
                + 0.15 * (env["temp"] - 20.0)
                + rng.normal(0.0, 2.0 * ns, n)
            )
        for k in range(3):
            out[:, col + 3 + k] = (
                self.no2_slope[k] * env["no2"]
                + 0.2 * env["o3"]
                + self.no2_offset[k]
                + 0.25 * (env["temp"] - 10.0)
                + rng.normal(0.0, 3.0 * ns, n)
            )
        out[:, -2] = env["temp"] + rng.normal(0.0, 0.1, n)
        out[:, -1] = env["rh"] + rng.normal(0.0, 0.8, n)
        return self.clip(out)
