"""A third-party SOAP client (zeep) against the hub: loads the served WSDL, then calls
paVerifyPaymentNotice and paGetPaymentV2 for one notice and prints what came back.

usage: zeep_client.py WSDL_URL ID_PA BROKER STATION NOTICE_NUMBER
"""
import sys

import zeep

wsdl, id_pa, broker, station, notice = sys.argv[1:6]
client = zeep.Client(wsdl)
qr = {"fiscalCode": id_pa, "noticeNumber": notice}
verify = client.service.paVerifyPaymentNotice(
    idPA=id_pa, idBrokerPA=broker, idStation=station, qrCode=qr)
print("verify", verify.outcome, verify.paymentList.paymentOptionDescription.amount)
payment = client.service.paGetPaymentV2(
    idPA=id_pa, idBrokerPA=broker, idStation=station, qrCode=qr)
transfers = payment.data.transferList.transfer
print("getPaymentV2", payment.outcome, payment.data.paymentAmount, len(transfers), transfers[0].IBAN)
