-- wrk script for ops/bench/soap.sh: one paForNode call per request, cycling through notices.
-- Environment: NOTICES (file, one notice number a line), OPERATION (verify | getPaymentV2),
-- ID_PA, BROKER, STATION.
local notices = {}
for line in io.lines(os.getenv("NOTICES")) do notices[#notices + 1] = line end
local op = os.getenv("OPERATION") or "verify"
local id_pa, broker, station = os.getenv("ID_PA"), os.getenv("BROKER"), os.getenv("STATION")
local element, action
if op == "verify" then
  element, action = "paVerifyPaymentNoticeReq", "paVerifyPaymentNotice"
else
  element, action = "paGetPaymentV2Request", "paGetPaymentV2"
end
local template = '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
  .. 'xmlns:paf="http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd"><soapenv:Body><paf:' .. element .. '>'
  .. '<idPA>' .. id_pa .. '</idPA><idBrokerPA>' .. broker .. '</idBrokerPA><idStation>' .. station .. '</idStation>'
  .. '<qrCode><fiscalCode>' .. id_pa .. '</fiscalCode><noticeNumber>%s</noticeNumber></qrCode>'
  .. '</paf:' .. element .. '></soapenv:Body></soapenv:Envelope>'
local headers = { ["Content-Type"] = "text/xml; charset=utf-8", ["SOAPAction"] = action }
local i = math.random(#notices)

request = function()
  i = i % #notices + 1
  return wrk.format("POST", "/pagopa/paForNode", headers, string.format(template, notices[i]))
end

-- Any answer that is not OK counts as an error in wrk's report.
response = function(status, headers, body)
  if not string.find(body, "<outcome>OK</outcome>", 1, true) then
    wrk.thread:set("ko", (wrk.thread:get("ko") or 0) + 1)
  end
end
