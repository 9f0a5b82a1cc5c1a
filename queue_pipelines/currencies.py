"""Currencies Stripe accepts, and which of them have no minor unit."""

# Stripe's presentment currencies (docs.stripe.com/currencies), lower case as the API wants.
STRIPE_CURRENCIES = frozenset(
    """
    usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd
    bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp
    gel gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw
    kwd kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad
    ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek
    sgd shp sle sos srd std szl thb tjs tnd top try ttd twd tzs uah ugx uyu uzs vnd vuv wst
    xaf xcd xof xpf yer zar zmw
    """.split()
)

# Amounts in these are whole units: 500 jpy is five hundred yen, not five.
ZERO_DECIMAL_CURRENCIES = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
# Three decimals: 1000 kwd is one dinar.
THREE_DECIMAL_CURRENCIES = frozenset("bhd jod kwd omr tnd".split())


def format_amount(amount: int, currency: str) -> str:
    """Render an amount in minor units for people: 1050 usd -> '10.50 USD'."""
    code = currency.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return f"{amount} {code.upper()}"
    places = 3 if code in THREE_DECIMAL_CURRENCIES else 2
    sign = "-" if amount < 0 else ""
    whole, minor = divmod(abs(amount), 10**places)
    return f"{sign}{whole}.{minor:0{places}d} {code.upper()}"
