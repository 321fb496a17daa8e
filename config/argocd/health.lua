-- Argo CD health check for every clouddeck.io kind. The same reading of the conditions
-- as kstatus (Flux, cli-utils), in Argo CD's words:
--   Stalled=True                   -> Degraded     (a terminal failure or an invalid spec)
--   Reconciling=True, or a newer
--   generation than the status's   -> Progressing  (building, rolling out, verifying...)
--   Ready=True                     -> Healthy      (Degraded when Degraded=True, e.g. a
--                                                   Webhook whose deliveries fail)
--   Ready=False and nothing else   -> Suspended    (done as meant without serving: a
--                                                   canceled or superseded Deployment,
--                                                   a disabled Webhook)
--   no status yet                  -> Progressing
-- config/argocd/health-checks.yaml carries it into argocd-cm; cargo test checks both
-- against the end states of every kind (src/controllers/health_checks.rs).
local hs = { status = "Progressing", message = "waiting for the CloudDeck operator" }
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed ~= generation then
  hs.message = "the operator has not seen generation " .. generation .. " yet"
  return hs
end
local found = {}
for _, condition in ipairs(obj.status.conditions or {}) do
  found[condition.type] = condition
end
local function said(condition)
  return condition.reason .. ": " .. (condition.message or "")
end
local function holds(type)
  return found[type] ~= nil and found[type].status == "True"
end
if holds("Stalled") then
  hs.status = "Degraded"
  hs.message = said(found.Stalled)
elseif holds("Reconciling") then
  hs.message = said(found.Reconciling)
elseif holds("Ready") then
  if holds("Degraded") then
    hs.status = "Degraded"
    hs.message = said(found.Degraded)
  else
    hs.status = "Healthy"
    hs.message = said(found.Ready)
  end
elseif found.Ready ~= nil and found.Ready.status == "False" then
  hs.status = "Suspended"
  hs.message = said(found.Ready)
end
return hs
